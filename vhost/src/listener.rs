//! The control thread of one controller: listens on the controller's Unix socket, serves one
//! frontend at a time with the `vhost` crate's `BackendReqHandler`, and on disconnect stops
//! the rings and waits for the next frontend (a restarted QEMU, or QEMU reconnecting to a
//! restarted target).
//!
//! One OS thread per controller (not a shared mio loop): a control message may block for as
//! long as a ring takes to drain (GET_VRING_BASE, SET_MEM_TABLE), and one controller's drain
//! must not delay another's messages; controllers are few, so a thread each costs little.
//! Stopping: set the flag, shut the listening socket and the connection down (both wake a
//! blocked `accept`/`recv` on Linux), join.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vhost::vhost_user::{BackendReqHandler, Error as VuError};

use crate::controller::CtrlShared;
use crate::device::Device;

/// The running control thread of a controller.
pub struct ControlThread {
    stop: Arc<AtomicBool>,
    listener: UnixListener,
    conn: Arc<Mutex<Option<UnixStream>>>,
    join: Option<JoinHandle<()>>,
}

impl ControlThread {
    /// Starts serving `listener` for `ctrl`. Thread contract: any thread.
    pub fn start(ctrl: Arc<CtrlShared>, listener: UnixListener) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let conn: Arc<Mutex<Option<UnixStream>>> = Arc::new(Mutex::new(None));
        let l2 = listener.try_clone()?;
        let (s2, c2) = (stop.clone(), conn.clone());
        let join = std::thread::Builder::new()
            .name(format!("vhost-{}", ctrl.name))
            .spawn(move || serve(ctrl, l2, s2, c2))?;
        Ok(Self {
            stop,
            listener,
            conn,
            join: Some(join),
        })
    }

    /// Stops the thread: the current frontend's rings are drained while it is still
    /// connected, then it is disconnected and no new one is accepted. Blocks until done.
    /// Thread contract: not a reactor thread.
    ///
    /// The order matters: once the socket is down, QEMU stops the device without asking for
    /// the ring bases and no longer forwards the call eventfd to the guest, so a completion
    /// written to the used ring after that is never signalled; the next target, finding it
    /// no longer in the inflight region, does not resubmit it, and the guest waits forever.
    pub fn stop(mut self, ctrl: &CtrlShared) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(dev) = ctrl.session() {
            if let Ok(mut d) = dev.lock() {
                d.close();
            }
        }
        // SAFETY: shutdown(2) on a socket fd we own; a listening socket shut down makes a
        // blocked accept return.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(c) = self
            .conn
            .lock()
            .ok()
            .and_then(|g| g.as_ref().and_then(|c| c.try_clone().ok()))
        {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

fn serve(
    ctrl: Arc<CtrlShared>,
    listener: UnixListener,
    stop: Arc<AtomicBool>,
    conn: Arc<Mutex<Option<UnixStream>>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                tracing::warn!("vhost controller '{}': accept failed: {e}", ctrl.name);
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if ctrl.is_removed() {
            tracing::warn!(
                "vhost controller '{}': its bdev was removed; refusing a frontend",
                ctrl.name
            );
            continue;
        }
        if let Ok(mut g) = conn.lock() {
            *g = stream.try_clone().ok();
        }
        tracing::info!("vhost controller '{}': frontend connected", ctrl.name);
        let dev = Arc::new(Mutex::new(Device::new(ctrl.clone())));
        ctrl.set_session(Some(dev.clone()));
        let mut handler = BackendReqHandler::from_stream(stream, dev.clone());
        loop {
            match handler.handle_request() {
                Ok(()) => {}
                Err(VuError::Disconnected) | Err(VuError::PartialMessage) => {
                    tracing::info!("vhost controller '{}': frontend disconnected", ctrl.name);
                    break;
                }
                Err(e @ (VuError::SocketBroken(_) | VuError::SocketError(_))) => {
                    tracing::info!("vhost controller '{}': connection closed: {e}", ctrl.name);
                    break;
                }
                Err(e) => {
                    // A malformed or refused message: the crate has already answered what it
                    // could; the connection stays usable unless the stream is out of sync.
                    tracing::warn!("vhost controller '{}': request failed: {e}", ctrl.name);
                    if matches!(
                        e,
                        VuError::InvalidMessage | VuError::OversizedMsg | VuError::IncorrectFds
                    ) {
                        break;
                    }
                }
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
        }
        // The rings first: a session leaves `vhost_get_controllers` only once its rings
        // have stopped (drained), so a frontend or an operator that sees it gone may touch
        // the rings.
        if let Ok(mut d) = dev.lock() {
            d.stop_all();
        }
        ctrl.set_session(None);
        if let Ok(mut g) = conn.lock() {
            *g = None;
        }
    }
}
