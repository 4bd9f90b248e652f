//! The per-packet section's baseline: two programs that do nothing — a TC classifier returning
//! "next" (-1) and an XDP program returning `XDP_PASS` — whose cost per run (the kernel's own
//! run-time statistics, their overhead included) imag's programs are compared with.
//!
//! Besides the client's own interface, a TC no-op is attached first on every TC hook an imag
//! program runs on ([`BesideImag`]): the same packets, in the same state, at the same point of
//! the stack, one no-op per imag program so that each has its own baseline.
//!
//! No BPF compiler is needed: each program is two instructions, written here into the smallest
//! ELF object aya's loader accepts (a section per program with a function symbol, a `license`
//! section). A program's name in the kernel is its symbol's.

use std::path::Path;

use aya::{
    Ebpf,
    programs::{LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode, tc::TcAttachOptions},
};

/// The no-op TC program's name (as `bpftool prog show` lists it).
pub const TC_NAME: &str = "bench_noop_tc";
/// The no-op XDP program's name.
pub const XDP_NAME: &str = "bench_noop_xdp";

/// `r0 = imm; exit`.
fn return_imm(imm: i32) -> Vec<u8> {
    let mut code = vec![0xb7, 0x00, 0x00, 0x00];
    code.extend_from_slice(&imm.to_le_bytes());
    code.extend_from_slice(&[0x95, 0, 0, 0, 0, 0, 0, 0]);
    code
}

fn pad8(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(8) {
        buf.push(0);
    }
}

/// An `Elf64_Shdr` without its (always zero) address: name offset, type, flags, offset, size, link,
/// info, alignment, entry size.
type SectionHeader = (u32, u32, u64, u64, u64, u32, u32, u64, u64);

/// A relocatable eBPF ELF object with `classifier` (returns -1) and `xdp` (returns 2).
#[allow(
    clippy::cast_possible_truncation,
    reason = "offsets and sizes within an object of a few hundred bytes"
)]
#[allow(
    clippy::too_many_lines,
    reason = "the object's bytes in the order they lie in the file"
)]
pub fn object() -> Vec<u8> {
    let programs = [
        ("classifier", TC_NAME, return_imm(-1)),
        ("xdp", XDP_NAME, return_imm(2)),
    ];
    let mut shstrtab = vec![0u8];
    let name = |table: &mut Vec<u8>, s: &str| {
        let at = table.len() as u32;
        table.extend_from_slice(s.as_bytes());
        table.push(0);
        at
    };
    let mut strtab = vec![0u8];
    let mut sections: Vec<SectionHeader> = vec![(0, 0, 0, 0, 0, 0, 0, 0, 0)];
    let mut body = vec![0u8; 64];
    let mut symtab = vec![0u8; 24];
    for (section, symbol, code) in &programs {
        let index = sections.len() as u16;
        let sh_name = name(&mut shstrtab, section);
        sections.push((
            sh_name,
            1,
            2 | 4,
            body.len() as u64,
            code.len() as u64,
            0,
            0,
            8,
            0,
        ));
        body.extend_from_slice(code);
        // Elf64_Sym: name, info (global function), other, section, value, size.
        symtab.extend_from_slice(&name(&mut strtab, symbol).to_le_bytes());
        symtab.extend_from_slice(&[0x12, 0]);
        symtab.extend_from_slice(&index.to_le_bytes());
        symtab.extend_from_slice(&0u64.to_le_bytes());
        symtab.extend_from_slice(&(code.len() as u64).to_le_bytes());
    }
    let license = name(&mut shstrtab, "license");
    sections.push((license, 1, 2 | 1, body.len() as u64, 4, 0, 0, 1, 0));
    body.extend_from_slice(b"GPL\0");
    pad8(&mut body);
    let symtab_index = sections.len() as u32;
    let sh_name = name(&mut shstrtab, ".symtab");
    sections.push((
        sh_name,
        2,
        0,
        body.len() as u64,
        symtab.len() as u64,
        symtab_index + 1,
        1,
        8,
        24,
    ));
    body.extend_from_slice(&symtab);
    let sh_name = name(&mut shstrtab, ".strtab");
    sections.push((
        sh_name,
        3,
        0,
        body.len() as u64,
        strtab.len() as u64,
        0,
        0,
        1,
        0,
    ));
    body.extend_from_slice(&strtab);
    let shstrndx = sections.len() as u16;
    let sh_name = name(&mut shstrtab, ".shstrtab");
    sections.push((sh_name, 3, 0, body.len() as u64, 0, 0, 0, 1, 0));
    let last = sections.len() - 1;
    sections[last].4 = shstrtab.len() as u64;
    body.extend_from_slice(&shstrtab);
    pad8(&mut body);
    let shoff = body.len() as u64;
    for (name, kind, flags, offset, size, link, info, align, entsize) in &sections {
        body.extend_from_slice(&name.to_le_bytes());
        body.extend_from_slice(&kind.to_le_bytes());
        body.extend_from_slice(&flags.to_le_bytes());
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(&offset.to_le_bytes());
        body.extend_from_slice(&size.to_le_bytes());
        body.extend_from_slice(&link.to_le_bytes());
        body.extend_from_slice(&info.to_le_bytes());
        body.extend_from_slice(&align.to_le_bytes());
        body.extend_from_slice(&entsize.to_le_bytes());
    }
    // Elf64_Ehdr: 64-bit, little-endian, version 1; relocatable, machine EM_BPF (247).
    let mut header = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    header.extend_from_slice(&1u16.to_le_bytes());
    header.extend_from_slice(&247u16.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    header.extend_from_slice(&shoff.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&64u16.to_le_bytes());
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(&64u16.to_le_bytes());
    header.extend_from_slice(&(sections.len() as u16).to_le_bytes());
    header.extend_from_slice(&shstrndx.to_le_bytes());
    body[..64].copy_from_slice(&header);
    body
}

/// Both no-ops loaded and attached to one interface of the calling thread's network namespace:
/// TC on its egress (TCX), XDP on its ingress (generic mode). Dropping it detaches them.
pub struct Noops {
    _ebpf: Ebpf,
    pub tc_id: u32,
    pub xdp_id: u32,
}

impl Noops {
    pub fn attach(iface: &str) -> anyhow::Result<Noops> {
        use anyhow::Context as _;
        let mut ebpf = Ebpf::load(&object()).context("loading the no-op programs")?;
        let tc = tc_noop(&mut ebpf)?;
        tc.load()?;
        tc.attach(iface, TcAttachType::Egress)
            .with_context(|| format!("attaching the TC no-op to {iface} egress"))?;
        let tc_id = tc.info()?.id();
        let xdp: &mut Xdp = ebpf
            .program_mut(XDP_NAME)
            .context("no XDP no-op in the object")?
            .try_into()?;
        xdp.load()?;
        xdp.attach(iface, XdpMode::Skb)
            .with_context(|| format!("attaching the XDP no-op to {iface} (generic mode)"))?;
        let xdp_id = xdp.info()?.id();
        Ok(Noops {
            _ebpf: ebpf,
            tc_id,
            xdp_id,
        })
    }
}

/// The imag program behind a pinned link, by the agent's pin name (`link-tc-7`: the holding
/// program on ifindex 7's ingress; `link-to-`/`link-from-`: a warm host's link, egress/ingress),
/// and the hook: (program, ifindex, attach type). XDP links have no TC hook to share.
pub fn imag_tc_hook(pin: &str) -> Option<(&'static str, u32, TcAttachType)> {
    let name = pin.strip_prefix("link-")?;
    let (program, rest, attach) = if let Some(rest) = name.strip_prefix("tc-") {
        ("imag_hold_tc", rest, TcAttachType::Ingress)
    } else if let Some(rest) = name.strip_prefix("to-") {
        ("imag_to_host", rest, TcAttachType::Egress)
    } else if let Some(rest) = name.strip_prefix("from-") {
        ("imag_from_host", rest, TcAttachType::Ingress)
    } else {
        return None;
    };
    Some((program, rest.parse().ok()?, attach))
}

/// One TC no-op per imag TC program, attached first (TCX order) on each hook that program runs on,
/// found from the agent's pins in `pin_dir`. Dropping it detaches them.
pub struct BesideImag {
    /// One loaded no-op per imag program (dropping one detaches its links).
    loaded: Vec<Ebpf>,
    /// (imag program, the id of the no-op beside it).
    pub ids: Vec<(&'static str, u32)>,
}

impl BesideImag {
    pub fn attach(pin_dir: &Path) -> anyhow::Result<BesideImag> {
        use anyhow::Context as _;
        let mut hooks: Vec<(&'static str, u32, TcAttachType)> = std::fs::read_dir(pin_dir)
            .with_context(|| format!("reading the agent's pins in {}", pin_dir.display()))?
            .flatten()
            .filter_map(|e| imag_tc_hook(&e.file_name().to_string_lossy()))
            .collect();
        hooks.sort_by_key(|(program, index, _)| (*program, *index));
        let mut beside = BesideImag {
            loaded: Vec::new(),
            ids: Vec::new(),
        };
        for (program, index, attach) in hooks {
            let slot = if let Some(slot) = beside.ids.iter().position(|(p, _)| *p == program) {
                slot
            } else {
                let mut ebpf = Ebpf::load(&object()).context("loading a no-op program")?;
                let tc = tc_noop(&mut ebpf)?;
                tc.load()?;
                let id = tc.info()?.id();
                beside.loaded.push(ebpf);
                beside.ids.push((program, id));
                beside.ids.len() - 1
            };
            let iface = interface_name(index)
                .with_context(|| format!("the interface of {program}'s hook (ifindex {index})"))?;
            tc_noop(&mut beside.loaded[slot])?
                .attach_with_options(
                    &iface,
                    attach,
                    TcAttachOptions::TcxOrder(LinkOrder::first()),
                )
                .with_context(|| format!("attaching a TC no-op before {program} on {iface}"))?;
        }
        Ok(beside)
    }
}

/// The TC no-op in a loaded [`object`].
fn tc_noop(ebpf: &mut Ebpf) -> anyhow::Result<&mut SchedClassifier> {
    use anyhow::Context as _;
    Ok(ebpf
        .program_mut(TC_NAME)
        .context("no TC no-op in the object")?
        .try_into()?)
}

/// An interface's name from its index, in the calling thread's namespace.
fn interface_name(index: u32) -> anyhow::Result<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if name.is_null() {
        anyhow::bail!(
            "no interface with index {index}: {}",
            std::io::Error::last_os_error()
        );
    }
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
}

#[cfg(test)]
mod tests {
    use aya::programs::TcAttachType;

    #[test]
    fn pins_name_the_imag_program_and_its_hook() {
        let hook =
            |pin| super::imag_tc_hook(pin).map(|(p, i, a)| (p, i, a == TcAttachType::Egress));
        assert_eq!(hook("link-tc-7"), Some(("imag_hold_tc", 7, false)));
        assert_eq!(hook("link-to-12"), Some(("imag_to_host", 12, true)));
        assert_eq!(hook("link-from-12"), Some(("imag_from_host", 12, false)));
        assert_eq!(hook("link-xdp-7"), None);
        assert_eq!(hook("link-tc-x"), None);
        assert_eq!(hook("HOSTS"), None);
    }

    #[test]
    fn the_object_holds_both_programs() {
        let ebpf = aya::Ebpf::load(&super::object()).expect("the no-op object parses");
        let names: Vec<&str> = ebpf.programs().map(|(name, _)| name).collect();
        assert!(names.contains(&super::TC_NAME), "{names:?}");
        assert!(names.contains(&super::XDP_NAME), "{names:?}");
    }
}
