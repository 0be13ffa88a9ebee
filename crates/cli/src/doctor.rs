//! `ttdrv doctor`: checks everything a host needs to drive ttdrv devices through VFIO and says how to fix what
//! is missing. Each line is `[ok]`, `[warn]` (works, but slower or less safe), `[FAIL]` (VFIO cannot work) or
//! `[info]`, followed by an indented `fix:` where there is something to do.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use ttdrv::transport::vfio::advice;
use ttdrv::transport::vfio::host::HostFacts;
use ttdrv::transport::vfio::sysfs::{self, HugepageCount, PciDeviceInfo, SYSFS_ROOT};

/// Where the doctor looks: sysfs, `/dev`, and the facts of this process.
#[derive(Clone, Debug)]
pub struct DoctorEnv {
    /// sysfs root (`/sys`).
    pub sys: PathBuf,
    /// devtmpfs root (`/dev`).
    pub dev: PathBuf,
    /// Configuration root (`/etc`): the installed limits.d drop-in and the IOMMU-group allow list.
    pub etc: PathBuf,
    /// CPU vendor, VM or not, memlock limit.
    pub host: HostFacts,
}

impl DoctorEnv {
    /// This host, with sysfs at `sysfs_root`.
    pub fn current(sysfs_root: &Path) -> DoctorEnv {
        DoctorEnv {
            sys: sysfs_root.to_path_buf(),
            dev: PathBuf::from("/dev"),
            etc: PathBuf::from("/etc"),
            host: HostFacts::current(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Info,
    Ok,
    Warn,
    Fail,
}

struct Report<'a> {
    out: &'a mut dyn Write,
    fails: usize,
    warns: usize,
}

impl Report<'_> {
    /// Writes one finding; output errors are ignored (the verdict is the return value).
    fn line(&mut self, level: Level, what: &str, fix: Option<&str>) {
        let tag = match level {
            Level::Info => "[info]",
            Level::Ok => "[ok]  ",
            Level::Warn => "[warn]",
            Level::Fail => "[FAIL]",
        };
        match level {
            Level::Fail => self.fails += 1,
            Level::Warn => self.warns += 1,
            _ => {}
        }
        let _ = writeln!(self.out, "{tag} {what}");
        if let Some(fix) = fix {
            let mut lines = fix.lines();
            if let Some(first) = lines.next() {
                let _ = writeln!(self.out, "       fix: {first}");
            }
            for l in lines {
                let _ = writeln!(self.out, "            {l}");
            }
        }
    }
}

/// Runs every check on this host (sysfs at `sysfs_root`, normally `/sys`) and writes the findings to `out`.
/// Returns true when nothing keeps ttdrv from driving its devices through VFIO.
pub fn doctor(sysfs_root: &Path, out: &mut dyn Write) -> bool {
    let root = if sysfs_root.as_os_str().is_empty() { Path::new(SYSFS_ROOT) } else { sysfs_root };
    doctor_with(&DoctorEnv::current(root), out)
}

fn can_open_rw(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads the NUL-terminated path, which lives across the call.
    unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::W_OK) == 0 }
}

/// As [`doctor`], in an explicit environment (tests use a fake tree).
pub fn doctor_with(env: &DoctorEnv, out: &mut dyn Write) -> bool {
    let mut r = Report { out, fails: 0, warns: 0 };
    let _ = writeln!(r.out, "ttdrv doctor: can this host drive ttdrv devices through VFIO?");
    let groups = sysfs::iommu_group_count(&env.sys);
    if groups > 0 {
        r.line(Level::Ok, &format!("IOMMU on: {groups} IOMMU groups"), None);
    } else {
        let fix = advice::iommu_off(env.host.cpu_vendor.as_deref(), env.host.in_vm);
        r.line(Level::Fail, "IOMMU off: /sys/kernel/iommu_groups is empty", Some(&fix));
    }
    if sysfs::vfio_pci_available(&env.sys) {
        r.line(Level::Ok, "vfio-pci driver loaded", None);
    } else {
        r.line(Level::Fail, "vfio-pci driver not loaded", Some(&advice::no_vfio_pci()));
    }
    let container = env.dev.join("vfio/vfio");
    if !container.exists() {
        r.line(Level::Fail, "/dev/vfio/vfio missing", Some(&advice::no_vfio_dev()));
    } else if !can_open_rw(&container) {
        r.line(Level::Fail, "/dev/vfio/vfio not accessible", Some(&advice::no_permission("/dev/vfio/vfio")));
    } else {
        r.line(Level::Ok, "/dev/vfio/vfio present", None);
    }

    let devices = ttdrv::transport::list_devices(&env.sys);
    if devices.is_empty() {
        r.line(
            Level::Info,
            &format!(
                "no PCI device with ttdrv's identity {:04x}:{:04x} on this host; programs use the emulated device \
                 (`emu`)",
                ttdrv::contract::PCI_VENDOR,
                ttdrv::contract::PCI_DEVICE
            ),
            None,
        );
    }
    let hugepages = sysfs::hugepages(&env.sys);
    for d in &devices {
        check_device(&mut r, env, d, &hugepages);
    }
    check_hugepages(&mut r, &hugepages);
    check_memlock(&mut r, env);

    let verdict = if r.fails > 0 {
        format!(
            "{} problem(s) keep VFIO from working on this host; until they are fixed (docs/host-setup.md), ttdrv \
             runs on its emulated device (`emu`)",
            r.fails
        )
    } else if devices.is_empty() {
        "this host is ready for ttdrv devices through VFIO (none is installed)".to_string()
    } else {
        format!("this host is ready: {} ttdrv device(s) usable through VFIO", devices.len())
    };
    let warns = if r.warns > 0 { format!(" ({} warning(s))", r.warns) } else { String::new() };
    let _ = writeln!(r.out, "{verdict}{warns}");
    r.fails == 0
}

fn check_device(r: &mut Report<'_>, env: &DoctorEnv, d: &PciDeviceInfo, hugepages: &[HugepageCount]) {
    let a = d.address;
    if d.bound_to_vfio() {
        r.line(Level::Ok, &format!("{a}: bound to vfio-pci"), None);
    } else {
        let fix = advice::not_bound(&a, Some((d.vendor, d.device)), d.driver.as_deref());
        r.line(Level::Fail, &format!("{a}: bound to {}", d.driver.as_deref().unwrap_or("no driver")), Some(&fix));
    }
    let Some(group) = d.iommu_group else {
        r.line(Level::Fail, &format!("{a}: in no IOMMU group"), Some(&advice::no_group(&a)));
        return;
    };
    let members = sysfs::group_members(&env.sys, group);
    if members.iter().all(|m| m.allows_vfio()) {
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        r.line(Level::Ok, &format!("{a}: IOMMU group {group} is viable ({})", names.join(", ")), None);
    } else {
        let fix = advice::group_not_viable(&a, group, &members);
        r.line(Level::Fail, &format!("{a}: IOMMU group {group} is not viable"), Some(&fix));
    }
    check_group_access(r, env, &a, group, &members);
    if d.bound_to_vfio() {
        let node = env.dev.join("vfio").join(group.to_string());
        let shown = format!("/dev/vfio/{group}");
        match std::fs::metadata(&node) {
            Err(_) => r.line(
                Level::Fail,
                &format!("{a}: {shown} missing"),
                Some("the group device appears when vfio-pci binds the device; rebind it (see above) or check that /dev is a devtmpfs"),
            ),
            Ok(_) if !can_open_rw(&node) => {
                r.line(Level::Fail, &format!("{a}: no access to {shown}"), Some(&advice::no_permission(&shown)))
            }
            Ok(m) if m.permissions().mode() & 0o006 != 0 => r.line(
                Level::Warn,
                &format!("{a}: {shown} is accessible to every user (mode {:o})", m.permissions().mode() & 0o777),
                Some(&format!("install {} so only the `{}` group may open it", advice::UDEV_RULE, advice::ACCESS_GROUP)),
            ),
            Ok(_) => r.line(Level::Ok, &format!("{a}: {shown} accessible"), None),
        }
    }
    // DMA memory is placed on the device's node; without free hugepages there it falls back to 4 KiB pages. The
    // number needed is the one the driver's own hugepage warning and docs/host-setup.md quote.
    let need_pages = ttdrv::DeviceParams::default().hugepages_needed();
    let free: u64 = hugepages
        .iter()
        .filter(|h| h.size_kib == 2048 && (d.numa_node.is_none() || h.node.is_none() || h.node == d.numa_node))
        .map(|h| h.free)
        .sum();
    let node = d.numa_node.map_or_else(|| "its NUMA node".to_string(), |n| format!("NUMA node {n}"));
    if free >= need_pages {
        r.line(Level::Ok, &format!("{a}: {free} free 2 MiB hugepages on {node}"), None);
    } else {
        let path = match d.numa_node {
            Some(n) => format!("/sys/devices/system/node/node{n}/hugepages/hugepages-2048kB/nr_hugepages"),
            None => "/proc/sys/vm/nr_hugepages".to_string(),
        };
        r.line(
            Level::Warn,
            &format!("{a}: {free} free 2 MiB hugepages on {node}, {need_pages} needed for one command queue"),
            Some(&format!(
                "reserve some (as root): `echo 64 > {path}`, or install udev/ttdrv-hugepages.conf into /etc/sysctl.d/; \
                 without them DMA memory uses 4 KiB pages (slower, more IOMMU entries)"
            )),
        );
    }
}

fn check_hugepages(r: &mut Report<'_>, hugepages: &[HugepageCount]) {
    if hugepages.is_empty() {
        r.line(Level::Warn, "hugepages: the kernel reports none (no hugetlbfs support?)", None);
        return;
    }
    for h in hugepages {
        let node = h.node.map_or_else(|| "system".to_string(), |n| format!("node {n}"));
        let size = if h.size_kib >= 1 << 20 {
            format!("{} GiB", h.size_kib >> 20)
        } else {
            format!("{} MiB", h.size_kib >> 10)
        };
        r.line(Level::Info, &format!("hugepages {size} on {node}: {} free of {}", h.free, h.total), None);
    }
    if !hugepages.iter().any(|h| h.size_kib == 2048 && h.free > 0) {
        r.line(
            Level::Warn,
            "no free 2 MiB hugepages: DMA memory will use 4 KiB pages",
            Some("install udev/ttdrv-hugepages.conf into /etc/sysctl.d/ and run `sysctl --system` (as root), or `echo 64 > /proc/sys/vm/nr_hugepages`"),
        );
    }
}

/// Where an administrator lists the devices that may share an IOMMU group with a ttdrv device (udev/70-ttdrv.rules).
pub const GROUP_ALLOW_LIST: &str = "ttdrv/iommu-group-allow";

/// The entries of the allow list: PCI addresses and `vendor:device` ids, lowercase, without comments.
fn allow_list(etc: &Path) -> Vec<String> {
    std::fs::read_to_string(etc.join(GROUP_ALLOW_LIST))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_ascii_lowercase())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The udev rule gives the `ttdrv` group `/dev/vfio/N` only when every member of group N is a ttdrv device or on the
/// administrator's allow list: says which members keep it from doing so.
fn check_group_access(
    r: &mut Report<'_>,
    env: &DoctorEnv,
    a: &impl std::fmt::Display,
    group: u32,
    members: &[sysfs::GroupMember],
) {
    let allowed = allow_list(&env.etc);
    let dir = env.sys.join("kernel/iommu_groups").join(group.to_string()).join("devices");
    let id = |m: &sysfs::GroupMember, f: &str| {
        std::fs::read_to_string(dir.join(&m.name).join(f))
            .unwrap_or_default()
            .trim()
            .trim_start_matches("0x")
            .to_string()
    };
    let ttdrv_id = format!("{:04x}:{:04x}", ttdrv::contract::PCI_VENDOR, ttdrv::contract::PCI_DEVICE);
    let others: Vec<String> = members
        .iter()
        .filter_map(|m| {
            let vd = format!("{}:{}", id(m, "vendor"), id(m, "device")).to_ascii_lowercase();
            let listed = allowed.iter().any(|e| *e == vd || *e == m.name.to_ascii_lowercase());
            (vd != ttdrv_id && !listed).then(|| format!("{} ({vd})", m.name))
        })
        .collect();
    if others.is_empty() {
        return;
    }
    let list = format!("/etc/{GROUP_ALLOW_LIST}");
    r.line(
        Level::Warn,
        &format!(
            "{a}: IOMMU group {group} also holds {}, not ttdrv devices: {} does not give the `{}` group /dev/vfio/{group}",
            others.join(", "),
            advice::UDEV_RULE,
            advice::ACCESS_GROUP
        ),
        Some(&format!(
            "whoever opens the group can program every device in it; if handing those over with the card is safe (a \
             bridge without ACS, a function of the card itself), list them in {list}, one PCI address or \
             vendor:device per line, and run `udevadm trigger --action=add --subsystem-match=vfio`; otherwise move \
             the card to a slot with an IOMMU group of its own"
        )),
    );
}

fn check_memlock(r: &mut Report<'_>, env: &DoctorEnv) {
    let one_queue = ttdrv::DeviceParams::default().pinned_bytes();
    let budget = ttdrv::device::memlock_budget();
    let kib = budget / 1024;
    let conf = advice::MEMLOCK_CONF;
    let why = format!(
        "{kib} KiB: every command queue a device may have ({}) with the default rings, plus {} MiB of registered \
         memory",
        ttdrv::contract::MAX_QUEUES,
        ttdrv::device::REGISTERED_HOST_ALLOWANCE >> 20
    );
    match (env.host.memlock, env.host.cap_ipc_lock) {
        (_, true) => r.line(Level::Ok, "RLIMIT_MEMLOCK: this process holds CAP_IPC_LOCK, no limit applies", None),
        (None, false) => r.line(
            Level::Warn,
            "RLIMIT_MEMLOCK: unlimited: a ttdrv program may pin all of this host's memory",
            Some(&format!("install {conf} into /etc/security/limits.d/: it sizes the limit to {why}")),
        ),
        (Some(l), false) if l >= budget => r.line(
            Level::Ok,
            &format!(
                "RLIMIT_MEMLOCK: {} KiB (a device needs up to {kib} KiB; one queue {} KiB)",
                l / 1024,
                one_queue / 1024
            ),
            None,
        ),
        (Some(l), false) if l >= one_queue => r.line(
            Level::Warn,
            &format!(
                "RLIMIT_MEMLOCK: {} KiB: enough for {} command queue(s) with the default rings, not for every queue a \
                 device may have",
                l / 1024,
                l / one_queue
            ),
            Some(&format!(
                "raise it to {why}: install {conf} into /etc/security/limits.d/ (log in again), or `ulimit -l {kib}`"
            )),
        ),
        (Some(l), false) => r.line(
            Level::Fail,
            &format!("RLIMIT_MEMLOCK: {} KiB, too low to pin DMA memory", l / 1024),
            Some(&advice::memlock_too_low(Some(l), one_queue)),
        ),
    }
    // The installed drop-in, if any, must carry the computed number.
    let installed = env.etc.join("security/limits.d/99-ttdrv-memlock.conf");
    let Ok(text) = std::fs::read_to_string(&installed) else {
        return;
    };
    let values: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[2] == "memlock").then_some(f[3])
        })
        .collect();
    let shown = installed.display();
    if values.iter().all(|v| v.parse::<u64>() == Ok(kib)) && !values.is_empty() {
        r.line(Level::Ok, &format!("{shown}: memlock {kib} KiB"), None);
    } else {
        r.line(
            Level::Warn,
            &format!("{shown}: memlock {} instead of the computed {kib} KiB", values.join("/")),
            Some(&format!("install this release's {conf} over it: the limit is sized to {why}")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttdrv_testkit::fakesys::FakeSys;

    fn run(sys: &FakeSys, host: HostFacts) -> (bool, String) {
        let env =
            DoctorEnv { sys: sys.path().to_path_buf(), dev: sys.path().join("dev"), etc: sys.path().join("etc"), host };
        let mut out = Vec::new();
        let ok = doctor_with(&env, &mut out);
        (ok, String::from_utf8(out).unwrap())
    }

    fn vm_host() -> HostFacts {
        HostFacts { cpu_vendor: Some("AuthenticAMD".into()), in_vm: true, memlock: Some(8 << 20), cap_ipc_lock: true }
    }

    /// A working host: IOMMU, vfio-pci, /dev/vfio, one bound device, hugepages.
    fn good_host() -> FakeSys {
        let sys = FakeSys::new();
        sys.mkdir("bus/pci/drivers/vfio-pci");
        sys.add_device("0000:00:01.0", (0x8086, 0x1901), 0x060400, Some("pcieport"), Some(7), 0);
        sys.add_device("0000:01:00.0", (0x1234, 0x7454), 0x120000, Some("vfio-pci"), Some(7), 0);
        sys.write("dev/vfio/vfio", "");
        sys.write("dev/vfio/7", "");
        std::fs::set_permissions(sys.path().join("dev/vfio/7"), std::fs::Permissions::from_mode(0o660)).unwrap();
        let d = "devices/system/node/node0/hugepages/hugepages-2048kB";
        sys.write(&format!("{d}/nr_hugepages"), "64\n");
        sys.write(&format!("{d}/free_hugepages"), "64\n");
        // The root port shares the card's IOMMU group; the administrator allowed it.
        sys.write(
            "etc/ttdrv/iommu-group-allow",
            "# bridges without ACS above ttdrv cards\n0000:00:01.0  # root port\n",
        );
        sys
    }

    fn sized() -> HostFacts {
        HostFacts { memlock: Some(ttdrv::device::memlock_budget()), ..Default::default() }
    }

    #[test]
    fn explains_a_machine_without_vfio() {
        // This development machine: a VM without IOMMU groups, no vfio modules, no /dev/vfio, no hugepages.
        let sys = FakeSys::new();
        sys.add_device("0000:00:01.0", (0x1af4, 0x1000), 0x020000, Some("virtio-pci"), None, -1);
        let d = "devices/system/node/node0/hugepages/hugepages-2048kB";
        sys.write(&format!("{d}/nr_hugepages"), "0\n");
        sys.write(&format!("{d}/free_hugepages"), "0\n");
        let (ok, s) = run(&sys, vm_host());
        assert!(!ok, "{s}");
        assert!(s.contains("[FAIL] IOMMU off"), "{s}");
        assert!(s.contains("`amd_iommu=on iommu=pt`") && s.contains("virtual machine"), "{s}");
        assert!(s.contains("[FAIL] vfio-pci driver not loaded") && s.contains("modprobe vfio-pci"), "{s}");
        assert!(s.contains("[FAIL] /dev/vfio/vfio missing"), "{s}");
        assert!(s.contains("[info] no PCI device with ttdrv's identity 1234:7454"), "{s}");
        assert!(s.contains("[warn] no free 2 MiB hugepages") && s.contains("ttdrv-hugepages.conf"), "{s}");
        assert!(s.contains("[ok]   RLIMIT_MEMLOCK: this process holds CAP_IPC_LOCK"), "{s}");
        assert!(s.lines().last().unwrap().starts_with("3 problem(s) keep VFIO from working"), "{s}");
    }

    #[test]
    fn passes_a_ready_host() {
        let sys = good_host();
        sys.write("etc/security/limits.d/99-ttdrv-memlock.conf", &memlock_conf());
        let (ok, s) = run(&sys, sized());
        assert!(ok, "{s}");
        assert!(!s.contains("[FAIL]") && !s.contains("[warn]"), "{s}");
        assert!(s.contains("[ok]   0000:01:00.0: IOMMU group 7 is viable (0000:00:01.0, 0000:01:00.0)"), "{s}");
        assert!(s.contains("[ok]   0000:01:00.0: /dev/vfio/7 accessible"), "{s}");
        assert!(s.contains("[ok]   0000:01:00.0: 64 free 2 MiB hugepages on NUMA node 0"), "{s}");
        assert!(
            s.contains("[ok]   RLIMIT_MEMLOCK: 950272 KiB (a device needs up to 950272 KiB; one queue 43008 KiB)"),
            "{s}"
        );
        assert!(s.contains("99-ttdrv-memlock.conf: memlock 950272 KiB"), "{s}");
        assert!(s.lines().last().unwrap().starts_with("this host is ready: 1 ttdrv device(s)"), "{s}");
    }

    #[test]
    fn reports_binding_group_permissions_and_memlock() {
        let sys = good_host();
        sys.add_device("0000:01:00.1", (0x10de, 0x10f0), 0x040300, Some("snd_hda_intel"), Some(7), 0);
        sys.add_device("0000:02:00.0", (0x1234, 0x7454), 0x120000, Some("nvme"), Some(9), 1);
        std::fs::set_permissions(sys.path().join("dev/vfio/7"), std::fs::Permissions::from_mode(0o666)).unwrap();
        let host = HostFacts { memlock: Some(64 << 10), ..Default::default() };
        let (ok, s) = run(&sys, host);
        assert!(!ok);
        assert!(s.contains("[FAIL] 0000:01:00.0: IOMMU group 7 is not viable"), "{s}");
        assert!(s.contains("0000:01:00.1  snd_hda_intel   <- blocks the group"), "{s}");
        assert!(s.contains("[warn] 0000:01:00.0: /dev/vfio/7 is accessible to every user (mode 666)"), "{s}");
        assert!(s.contains("[FAIL] 0000:02:00.0: bound to nvme"), "{s}");
        assert!(s.contains("echo vfio-pci > /sys/bus/pci/devices/0000:02:00.0/driver_override"), "{s}");
        // One default command queue pins 42 MiB: 21 hugepages, `ulimit -l 43008` (KiB).
        assert!(s.contains("[warn] 0000:02:00.0: 0 free 2 MiB hugepages on NUMA node 1, 21 needed"), "{s}");
        assert!(s.contains("[FAIL] RLIMIT_MEMLOCK: 64 KiB") && s.contains("ulimit -l 43008"), "{s}");
        // The sound function is no ttdrv device and is not on the allow list: the udev rule keeps the group closed.
        assert!(
            s.contains("[warn] 0000:01:00.0: IOMMU group 7 also holds 0000:01:00.1 (10de:10f0), not ttdrv devices"),
            "{s}"
        );
        assert!(s.contains("/etc/ttdrv/iommu-group-allow"), "{s}");
    }

    /// The shipped limits.d drop-in, as committed.
    fn memlock_conf() -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../udev/99-ttdrv-memlock.conf")).unwrap()
    }

    /// The memlock limit is a sized number, the one the driver computes: the shipped drop-in carries it, an unlimited
    /// or smaller limit is reported with the number, and so is an installed drop-in with another value.
    #[test]
    fn the_memlock_limit_is_sized_and_checked() {
        let kib = ttdrv::device::memlock_budget() / 1024;
        let conf = memlock_conf();
        let lines: Vec<Vec<&str>> = conf
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines.len(), 2, "{conf}");
        for l in &lines {
            assert_eq!((l[0], l[2], l[3]), ("@ttdrv", "memlock", kib.to_string().as_str()), "{conf}");
        }
        assert!(!conf.lines().any(|l| !l.starts_with('#') && l.contains("unlimited")), "{conf}");

        let sys = good_host();
        let (_, s) = run(&sys, HostFacts { memlock: None, ..Default::default() });
        assert!(
            s.contains("[warn] RLIMIT_MEMLOCK: unlimited") && s.contains(&format!("{kib} KiB: every command queue")),
            "{s}"
        );
        let (_, s) = run(&sys, HostFacts { memlock: Some(100 << 20), ..Default::default() });
        assert!(s.contains("[warn] RLIMIT_MEMLOCK: 102400 KiB: enough for 2 command queue(s)"), "{s}");
        assert!(s.contains(&format!("ulimit -l {kib}")), "{s}");
        sys.write(
            "etc/security/limits.d/99-ttdrv-memlock.conf",
            "@ttdrv soft memlock unlimited\n@ttdrv hard memlock unlimited\n",
        );
        let (_, s) = run(&sys, sized());
        assert!(s.contains(&format!("memlock unlimited/unlimited instead of the computed {kib} KiB")), "{s}");
    }
}
