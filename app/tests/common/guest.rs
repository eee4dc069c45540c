//! QEMU guests for the integration tests (TCG, no KVM on these machines).
//!
//! The guest is Debian's cloud kernel and a busybox initramfs built (and cached under
//! `<target>/guest/`) by `scripts/guest/build-guest.sh`; it runs the guest script named by
//! `guest.test=NAME` (`scripts/guest/tests/NAME.sh`) and reports on the serial console with
//! `GUEST: PASS|FAIL|INFO ...` lines and a final `GUEST: DONE test=NAME exit=N`.
//!
//! Use: [`image`] once, a [`GuestSpec`] with the device arguments (e.g. [`vhost_user_blk`]),
//! [`GuestSpec::boot`], then [`Guest::finish`] and [`GuestRun::assert_passed`]. QEMU runs with a
//! deadline (killed when it passes), is killed when the [`Guest`] drops and when the thread that
//! booted it dies (PR_SET_PDEATHSIG). Missing QEMU, fio or busybox-static fails the test with
//! what to install. Each TCG guest keeps a core busy: guest tests belong in the nextest group
//! `reactors`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{workspace_root, BIN};

/// Guest memory (shared memfd, so vhost-user servers can map it).
pub const MEM_MB: u32 = 768;

/// A bootable guest: kernel and initramfs.
#[derive(Debug, Clone)]
pub struct Image {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// The cargo target directory (the test binary's `ferrite` lives in `<target>/<profile>/`).
pub fn target_dir() -> PathBuf {
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("ferrite binary lies in <target>/<profile>/")
        .to_path_buf()
}

/// Panics, saying what to install, unless `tool` is on PATH.
pub fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} not found: install the Debian package {package} \
         (scripts/test-all.sh installs it when run as root)"
    );
}

/// Builds or finds the cached guest, with `extra_bins` (static binaries) in its /usr/bin.
pub fn image(extra_bins: &[&Path]) -> Image {
    require("qemu-system-x86_64", "qemu-system-x86");
    require("fio", "fio");
    require("busybox", "busybox-static");
    let script = workspace_root().join("scripts/guest/build-guest.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(extra_bins)
        .env("GUEST_DIR", target_dir().join("guest"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{} printed no {k}: {stdout}", script.display()))
    };
    Image {
        kernel: get("KERNEL="),
        initrd: get("INITRD="),
    }
}

/// QEMU arguments for a vhost-user-blk disk on the server socket `sock`.
#[derive(Debug, Clone)]
pub struct VhostBlk {
    pub sock: PathBuf,
    pub num_queues: u32,
    pub packed: bool,
    /// Reconnect to a restarted server (`-chardev socket,...,reconnect=1`).
    pub reconnect: bool,
}

impl VhostBlk {
    pub fn new(sock: &Path) -> VhostBlk {
        VhostBlk {
            sock: sock.to_path_buf(),
            num_queues: 1,
            packed: false,
            reconnect: false,
        }
    }
}

/// The device arguments for `d` (the spec adds the shared memory vhost-user needs).
pub fn vhost_user_blk(d: &VhostBlk) -> Vec<String> {
    let mut chardev = format!("socket,id=vub0,path={}", d.sock.display());
    if d.reconnect {
        chardev.push_str(",reconnect=1");
    }
    let mut dev = format!(
        "vhost-user-blk-pci,chardev=vub0,num-queues={}",
        d.num_queues
    );
    if d.packed {
        dev.push_str(",packed=on");
    }
    vec!["-chardev".into(), chardev, "-device".into(), dev]
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// The guest script to run (`scripts/guest/tests/NAME.sh`).
    pub test: String,
    /// `guest.KEY=VALUE` parameters for the script.
    pub params: Vec<(String, String)>,
    /// Device arguments for QEMU.
    pub qemu_args: Vec<String>,
    /// Extra kernel command line words (e.g. `intel_iommu=on`).
    pub kernel_args: Vec<String>,
    /// Guest memory as a shared memfd (needed by vhost-user devices).
    pub shared_mem: bool,
    /// `-M q35` with an intel-iommu (for VFIO in the guest).
    pub iommu: bool,
    pub smp: u32,
    /// QEMU is killed after this long.
    pub timeout: Duration,
}

impl GuestSpec {
    pub fn new(test: &str) -> GuestSpec {
        GuestSpec {
            test: test.into(),
            params: Vec::new(),
            qemu_args: Vec::new(),
            kernel_args: Vec::new(),
            shared_mem: false,
            iommu: false,
            smp: 1,
            timeout: Duration::from_secs(120),
        }
    }

    /// Adds `guest.KEY=VALUE`.
    pub fn param(mut self, key: &str, value: impl ToString) -> GuestSpec {
        self.params.push((key.into(), value.to_string()));
        self
    }

    /// The full QEMU command line.
    pub fn command(&self, img: &Image) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-accel", "tcg", "-M", "q35", "-cpu", "max"]);
        c.args(["-bios", "/usr/share/qemu/qboot.rom"]);
        c.args(["-smp", &self.smp.to_string(), "-m", &format!("{MEM_MB}M")]);
        if self.shared_mem {
            c.args([
                "-object",
                &format!("memory-backend-memfd,id=mem,size={MEM_MB}M,share=on"),
                "-numa",
                "node,memdev=mem",
            ]);
        }
        if self.iommu {
            c.args(["-device", "intel-iommu"]);
        }
        c.args(["-display", "none", "-serial", "stdio", "-monitor", "none"]);
        c.args(["-no-reboot", "-kernel"]).arg(&img.kernel);
        c.arg("-initrd").arg(&img.initrd);
        let mut append = format!("console=ttyS0 quiet panic=-1 guest.test={}", self.test);
        for (k, v) in &self.params {
            append.push_str(&format!(" guest.{k}={v}"));
        }
        for a in &self.kernel_args {
            append.push(' ');
            append.push_str(a);
        }
        c.arg("-append").arg(append);
        c.args(&self.qemu_args);
        c
    }

    /// Starts QEMU; does not wait.
    pub fn boot(&self, img: &Image) -> Guest {
        let mut c = self.command(img);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl(PR_SET_PDEATHSIG) in the child between fork and exec touches no memory
        // and is async-signal-safe; it makes the kernel SIGKILL QEMU if the test dies.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let cmdline = format!("{c:?}");
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("spawn qemu-system-x86_64: {e}"));
        let console = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::clone(&console);
        let reader = std::thread::spawn(move || {
            for l in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                let l = String::from_utf8_lossy(&l)
                    .trim_end_matches('\r')
                    .to_string();
                lines.lock().expect("console lock").push(l);
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Guest {
            child: Some(child),
            console,
            reader: Some(reader),
            stderr: Some(stderr),
            started: Instant::now(),
            deadline: Instant::now() + self.timeout,
            cmdline,
        }
    }
}

/// A running QEMU guest, killed on drop.
pub struct Guest {
    child: Option<Child>,
    console: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: Option<std::thread::JoinHandle<String>>,
    started: Instant,
    deadline: Instant,
    cmdline: String,
}

impl Guest {
    /// The console so far.
    pub fn console(&self) -> Vec<String> {
        self.console.lock().expect("console lock").clone()
    }

    /// Waits (up to `limit`, and never past the guest's deadline) for a console line containing
    /// `needle`; panics with the console if it does not come or QEMU exits first.
    pub fn wait_line(&mut self, needle: &str, limit: Duration) {
        if let Err(e) = self.try_wait_line(needle, limit) {
            panic!("{e}");
        }
    }

    /// Like [`Guest::wait_line`], but returns the failure (with the console tail) instead.
    pub fn try_wait_line(&mut self, needle: &str, limit: Duration) -> Result<(), String> {
        let deadline = (Instant::now() + limit).min(self.deadline);
        loop {
            if self.console().iter().any(|l| l.contains(needle)) {
                return Ok(());
            }
            let exited = matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))));
            if exited || Instant::now() >= deadline {
                return Err(format!(
                    "guest console never showed {needle:?} ({}):\n{}",
                    if exited { "QEMU exited" } else { "timed out" },
                    tail(&self.console(), 60)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for QEMU to exit (killing it at the deadline) and collects the results.
    pub fn finish(mut self) -> GuestRun {
        let mut child = self.child.take().expect("child");
        let mut timed_out = false;
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait qemu") {
                break s;
            }
            if Instant::now() >= self.deadline {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait qemu");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let run = GuestRun::parse(self.console(), stderr, status, timed_out);
        eprintln!(
            "guest finished in {:.1} s ({status}{})",
            self.started.elapsed().as_secs_f64(),
            if timed_out {
                ", killed at deadline"
            } else {
                ""
            }
        );
        GuestRun {
            cmdline: self.cmdline.clone(),
            ..run
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The outcome of a guest run.
#[derive(Debug)]
pub struct GuestRun {
    pub console: Vec<String>,
    pub stderr: String,
    pub status: ExitStatus,
    pub timed_out: bool,
    /// Names of the checks reported `GUEST: PASS <name>`.
    pub passed: Vec<String>,
    /// `GUEST: FAIL ...` lines.
    pub failed: Vec<String>,
    /// The guest script's exit code (`GUEST: DONE ... exit=N`).
    pub exit: Option<i32>,
    pub cmdline: String,
}

impl GuestRun {
    fn parse(console: Vec<String>, stderr: String, status: ExitStatus, timed_out: bool) -> Self {
        let mut passed = Vec::new();
        let mut failed = Vec::new();
        let mut exit = None;
        for l in &console {
            let Some(i) = l.find("GUEST: ") else { continue };
            let msg = &l[i + 7..];
            if let Some(p) = msg.strip_prefix("PASS ") {
                passed.push(p.split_whitespace().next().unwrap_or("").to_string());
            } else if msg.starts_with("FAIL ") {
                failed.push(msg.to_string());
            } else if let Some(d) = msg.strip_prefix("DONE ") {
                exit = d
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("exit="))
                    .and_then(|n| n.parse().ok());
            }
        }
        GuestRun {
            console,
            stderr,
            status,
            timed_out,
            passed,
            failed,
            exit,
            cmdline: String::new(),
        }
    }

    /// Panics with the console tail unless every check in `expected` passed, none failed, the
    /// guest script exited 0 and QEMU powered off cleanly in time.
    pub fn assert_passed(&self, expected: &[&str]) {
        let missing: Vec<&&str> = expected
            .iter()
            .filter(|e| !self.passed.iter().any(|p| p == *e))
            .collect();
        let ok = missing.is_empty()
            && self.failed.is_empty()
            && self.exit == Some(0)
            && !self.timed_out
            && self.status.success();
        assert!(
            ok,
            "guest test failed: missing PASS {missing:?}, FAIL lines {:#?}, script exit {:?}, \
             qemu {}{}\nqemu: {}\nqemu stderr: {}\nconsole tail:\n{}",
            self.failed,
            self.exit,
            self.status,
            if self.timed_out {
                " (killed at the deadline)"
            } else {
                ""
            },
            self.cmdline,
            self.stderr.trim(),
            tail(&self.console, 80)
        );
    }
}

/// The last `n` lines, joined.
pub fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// qemu-storage-daemon exporting a vhost-user-blk device (the reference server), killed on drop.
pub struct Qsd {
    child: Child,
    pub sock: PathBuf,
}

impl Qsd {
    /// Exports a `size`-byte null-co (reads zeroes) or, with `file`, a raw file, writable, on
    /// `sock` with `num_queues` queues; waits for the socket.
    pub fn start(sock: &Path, size: u64, file: Option<&Path>, num_queues: u32) -> Qsd {
        require("qemu-storage-daemon", "qemu-system-x86 (qemu-utils)");
        let blockdev = match file {
            Some(f) => format!("driver=file,node-name=disk0,filename={}", f.display()),
            None => format!("driver=null-co,node-name=disk0,size={size},read-zeroes=on"),
        };
        let export = format!(
            "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={},\
             writable=on,num-queues={num_queues}",
            sock.display()
        );
        let mut c = Command::new("qemu-storage-daemon");
        c.args(["--blockdev", &blockdev, "--export", &export])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: as in GuestSpec::boot: prctl between fork and exec, async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("spawn qemu-storage-daemon: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            if let Ok(Some(s)) = child.try_wait() {
                panic!("qemu-storage-daemon exited: {s}");
            }
            assert!(Instant::now() < deadline, "qemu-storage-daemon: no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Qsd {
            child,
            sock: sock.to_path_buf(),
        }
    }
}

impl Drop for Qsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A statically linked release `ferrite` for the guest, built by
/// `scripts/guest/static-ferrite.sh` in its own target dir `<target>/guest/static-target` (cargo
/// rebuilds only what changed; scripts/test-all.sh builds it before the tests, since a first
/// build takes minutes).
pub fn static_ferrite() -> PathBuf {
    let script = workspace_root().join("scripts/guest/static-ferrite.sh");
    let t0 = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .env("GUEST_DIR", target_dir().join("guest"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "static ferrite build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "static ferrite ready in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "no static ferrite at {}", path.display());
    path
}

/// A guest (q35 with an intel-iommu, `intel_iommu=on`) with QEMU's emulated NVMe controller:
/// one namespace per image (raw files; several become `nvme-ns` namespaces 1, 2, ..). It runs
/// `scripts/guest/tests/vfio.sh`: binds the controller to vfio-pci, then runs `cmd` (a shell
/// command, may be empty; it sees $NVME_BDF, $NVME_BDFS, $NVME_GROUP) and the guest script
/// `then` if given. Put the binaries the command needs in the image ([`image`] `extra_bins`).
pub fn nvme_vfio(images: &[&Path], cmd: &str, then: Option<&str>) -> GuestSpec {
    assert!(!images.is_empty(), "an NVMe controller needs a namespace");
    let mut spec = GuestSpec::new("vfio");
    spec.iommu = true;
    spec.kernel_args.push("intel_iommu=on".into());
    let drive = |i: usize, p: &Path| format!("file={},if=none,id=nvm{i},format=raw", p.display());
    if let [one] = images {
        spec.qemu_args = vec![
            "-drive".into(),
            drive(0, one),
            "-device".into(),
            "nvme,serial=fe0001,drive=nvm0".into(),
        ];
    } else {
        spec.qemu_args = vec!["-device".into(), "nvme,id=nvme0,serial=fe0001".into()];
        for (i, p) in images.iter().enumerate() {
            spec.qemu_args.push("-drive".into());
            spec.qemu_args.push(drive(i, p));
            spec.qemu_args.push("-device".into());
            spec.qemu_args
                .push(format!("nvme-ns,drive=nvm{i},bus=nvme0,nsid={}", i + 1));
        }
    }
    if !cmd.is_empty() {
        let hex: String = cmd.bytes().map(|b| format!("{b:02x}")).collect();
        spec = spec.param("cmd", hex);
    }
    if let Some(t) = then {
        spec = spec.param("then", t);
    }
    spec
}
