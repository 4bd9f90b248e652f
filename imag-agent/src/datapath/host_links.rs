//! The TC programs on warm hosts' own links (`imag_to_host` on the egress, `imag_from_host` on
//! the ingress of the host side of a container's veth), attached and let go of on a thread of
//! their own. A TCX attach, and the last close of a TCX link, take the kernel's RTNL lock, which
//! the engine holds while it creates and removes containers' veths and namespaces: in a storm of
//! wakes most attaches waited ≥ 5 ms for it and some hundreds of ms. On the orchestrator's task
//! that wait held up every held packet queued behind it; here it delays only the counting of
//! that one host's traffic on its link.
//!
//! Nothing is lost by the wait. The caller writes the link's owner (`HOST_LINKS`) before it
//! queues the attach, so `imag_from_host` holds the container to its address from its first
//! packet; until the programs are on the link, the host's idleness is seen through its TCP
//! connections (`imag_tcp_state`), as it always was before an attach. Commands are handled in the
//! order they were queued, so an attach and a later detach of the same link cannot overtake each
//! other.
//!
//! Neighbours: [`super::attach`] (the orchestrator-facing `attach_host_link` that writes the
//! owner and queues here); [`super::pins`] (where the links are pinned).

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    sync::{Arc, Mutex, PoisonError, mpsc},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::{SchedClassifier, links::FdLink, tc::TcAttachType},
};
use imag_common::programs;
use tracing::{debug, info, warn};

use super::{
    DatapathError,
    attach::{fd_link, interface_exists},
    pins::Pins,
};
use crate::interfaces::Interface;

/// An attach that took at least this long (ms) is logged: it waited on the kernel's RTNL lock.
const SLOW_ATTACH_MS: f64 = 5.0;

/// How long letting go of every host link may take before `clear` stops waiting.
const CLEAR_TIMEOUT: Duration = Duration::from_secs(30);

/// The host links' owner on the agent's side: what is (or is on its way to being) attached
/// where, and the queue to the thread that does it.
pub(super) struct HostLinks {
    commands: mpsc::Sender<Command>,
    /// The link (host-side veth ifindex) each host's programs are on, or on their way to, and
    /// which attach put them there; shared with the thread, which forgets an attach that failed.
    placed: Arc<Mutex<HashMap<Ipv4Addr, Placed>>>,
    attaches: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Placed {
    ifindex: u32,
    attach: u64,
}

enum Command {
    Attach {
        addr: Ipv4Addr,
        attach: u64,
        veth: Interface,
    },
    Detach {
        ifindex: u32,
    },
    Clear {
        done: mpsc::Sender<usize>,
    },
}

impl HostLinks {
    /// Starts the thread, with its own handles of the two programs (the loaded ones stay in
    /// `ebpf`, for test runs).
    pub(super) fn start(ebpf: &Ebpf, pins: Option<Pins>) -> Result<HostLinks, DatapathError> {
        let handle = |name: &'static str| -> Result<SchedClassifier, DatapathError> {
            let program = ebpf.program(name).ok_or(DatapathError::Missing {
                what: "program",
                name,
            })?;
            program
                .info()
                .and_then(|info| SchedClassifier::from_program_info(info, Cow::Borrowed(name)))
                .map_err(|source| DatapathError::Program { name, source })
        };
        let placed = Arc::new(Mutex::new(HashMap::new()));
        let worker = Worker {
            to_host: handle(programs::TO_HOST)?,
            from_host: handle(programs::FROM_HOST)?,
            pins,
            links: BTreeMap::new(),
            placed: Arc::clone(&placed),
        };
        let (commands, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("imag-host-links".into())
            .spawn(move || worker.run(&queue))
            .map_err(DatapathError::HostLinkThread)?;
        Ok(HostLinks {
            commands,
            placed,
            attaches: 0,
        })
    }

    /// The link the host's programs are on (or on their way to).
    pub(super) fn placed(&self, addr: Ipv4Addr) -> Option<u32> {
        self.lock().get(&addr).map(|p| p.ifindex)
    }

    /// Queues attaching the host's programs to `veth` (the caller has let go of any earlier link
    /// of the host's).
    pub(super) fn queue_attach(&mut self, addr: Ipv4Addr, veth: &Interface) {
        self.attaches += 1;
        let attach = self.attaches;
        self.lock().insert(
            addr,
            Placed {
                ifindex: veth.index,
                attach,
            },
        );
        self.send(Command::Attach {
            addr,
            attach,
            veth: veth.clone(),
        });
    }

    /// Queues letting go of the host's programs (and their pins); returns the link they were on.
    pub(super) fn queue_detach(&mut self, addr: Ipv4Addr) -> Option<u32> {
        let ifindex = self.lock().remove(&addr)?.ifindex;
        self.send(Command::Detach { ifindex });
        Some(ifindex)
    }

    /// Lets go of every host link this agent holds and waits until that is done; returns how
    /// many links there were. Their pins are the caller's to remove.
    pub(super) fn clear(&mut self) -> usize {
        self.lock().clear();
        let (done, finished) = mpsc::channel();
        self.send(Command::Clear { done });
        finished.recv_timeout(CLEAR_TIMEOUT).unwrap_or_else(|_| {
            warn!(
                timeout_s = CLEAR_TIMEOUT.as_secs(),
                "letting go of the hosts' links did not finish in time"
            );
            0
        })
    }

    fn send(&self, command: Command) {
        if self.commands.send(command).is_err() {
            // Only if the thread panicked: its links went with it.
            warn!("the host-link thread is gone: hosts' links are neither attached nor detached");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Ipv4Addr, Placed>> {
        self.placed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The thread's side: the programs, and the links it attached or adopted, by pin name
/// (`to-<ifindex>`, `from-<ifindex>`).
struct Worker {
    to_host: SchedClassifier,
    from_host: SchedClassifier,
    pins: Option<Pins>,
    links: BTreeMap<String, FdLink>,
    placed: Arc<Mutex<HashMap<Ipv4Addr, Placed>>>,
}

impl Worker {
    fn run(mut self, queue: &mpsc::Receiver<Command>) {
        // Ends when the datapath is dropped; dropping the worker then detaches unpinned links.
        while let Ok(command) = queue.recv() {
            match command {
                Command::Attach { addr, attach, veth } => self.attach(addr, attach, &veth),
                Command::Detach { ifindex } => self.detach(ifindex),
                Command::Clear { done } => {
                    let count = self.links.len();
                    self.links.clear();
                    let _ = done.send(count);
                }
            }
        }
    }

    fn attach(&mut self, addr: Ipv4Addr, attach: u64, veth: &Interface) {
        let started = Instant::now();
        let attached = self.attach_both(veth);
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        match attached {
            Ok(()) => {
                if took_ms >= SLOW_ATTACH_MS {
                    info!(%addr, veth = %veth.name, took_ms = format_args!("{took_ms:.1}"),
                        "attaching to the host's link was slow");
                }
                debug!(%addr, veth = %veth.name, "activity counting attached to the host's link");
            }
            Err(err) => {
                if interface_exists(veth.index) {
                    warn!(%addr, veth = %veth.name, error = %err,
                        "cannot count the host's traffic on its link; idleness sees only its TCP connections");
                } else {
                    // The container stopped before the attach's turn came (a host evicted or
                    // put to sleep right after its wake): nothing is wrong, its detach follows.
                    debug!(%addr, veth = %veth.name, error = %err,
                        "the host's link was gone before its programs were attached");
                }
                // Not half attached: what did attach goes, and the host counts as without its
                // programs unless a later attach is already queued.
                self.detach(veth.index);
                let mut placed = self.placed.lock().unwrap_or_else(PoisonError::into_inner);
                if placed.get(&addr).is_some_and(|p| p.attach == attach) {
                    placed.remove(&addr);
                }
            }
        }
    }

    /// Attaches both programs to `veth`, adopting links an earlier agent pinned for it.
    fn attach_both(&mut self, veth: &Interface) -> Result<(), DatapathError> {
        let Worker {
            to_host,
            from_host,
            pins,
            links,
            ..
        } = self;
        for (program, name, attach_type, prefix) in [
            (to_host, programs::TO_HOST, TcAttachType::Egress, "to"),
            (
                from_host,
                programs::FROM_HOST,
                TcAttachType::Ingress,
                "from",
            ),
        ] {
            let link_name = format!("{prefix}-{}", veth.index);
            if let Some(link) = pins.as_ref().and_then(|p| p.open_link(&link_name)) {
                links.insert(link_name, link);
                continue;
            }
            let link_id = program.attach(&veth.name, attach_type).map_err(|source| {
                DatapathError::AttachOther {
                    program: name,
                    target: veth.name.clone(),
                    source,
                }
            })?;
            let link = fd_link(name, program.take_link(link_id))?;
            let link = super::pins::pin_if_pinning(pins.as_ref(), &link_name, link)?;
            links.insert(link_name, link);
        }
        Ok(())
    }

    /// Lets go of the programs on link `ifindex` and their pins (detaching them).
    fn detach(&mut self, ifindex: u32) {
        for prefix in ["to", "from"] {
            let name = format!("{prefix}-{ifindex}");
            if let Some(pins) = &self.pins {
                pins.remove_link(&name);
            }
            self.links.remove(&name);
        }
    }
}
