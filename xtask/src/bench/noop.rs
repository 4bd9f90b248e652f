//! The per-packet section's baselines: two programs that do nothing — a TC classifier returning
//! "next" (-1) and an XDP program returning `XDP_PASS` — whose cost per run (the kernel's own
//! run-time statistics, their overhead included) imag's programs are compared with; and a floor,
//! a program (TC, and XDP in its own object) doing only what counting a host's packet takes (two array lookups, a count and
//! a stamp: [`floor_code`]), which says what any program that keeps per-host activity costs at
//! the same hook.
//!
//! Besides the client's own interface, a TC no-op and a floor are attached first on every TC
//! hook an imag program runs on ([`BesideImag`]): the same packets, in the same state, at the
//! same point of the stack, one pair per imag program so that each has its own baselines. An
//! interface has one XDP program, so the XDP no-op and floor take turns ([`XdpBaselines`]) on the
//! client and, while the holding program is hooked by TC, on its interfaces
//! ([`holding_interfaces`]): the packets `imag_hold` sees there when it is hooked by XDP.
//!
//! No BPF compiler is needed: the programs are a few instructions each, written here into the
//! smallest ELF object aya's loader accepts (a section per program with a function symbol, a
//! `license` section, the floor's maps in a legacy `maps` section with `.rel` sections naming
//! them). A program's name in the kernel is its symbol's.

use std::path::Path;

use aya::{
    Ebpf,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode, tc::TcAttachOptions, xdp::XdpLinkId,
    },
};

/// The no-op TC program's name (as `bpftool prog show` lists it).
pub const TC_NAME: &str = "bench_noop_tc";
/// The no-op XDP program's name.
pub const XDP_NAME: &str = "bench_noop_xdp";
/// The floor TC program's name ([`floor_code`]).
pub const FLOOR_NAME: &str = "bench_floor_tc";
/// The floor as an XDP program.
pub const XDP_FLOOR_NAME: &str = "bench_floor_xdp";

/// One eBPF instruction: opcode, destination and source registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[0] = code;
    out[1] = (src << 4) | dst;
    out[2..4].copy_from_slice(&off.to_le_bytes());
    out[4..8].copy_from_slice(&imm.to_le_bytes());
    out
}

/// `r0 = imm; exit`.
fn return_imm(imm: i32) -> Vec<u8> {
    [insn(0xb7, 0, 0, 0, imm), insn(0x95, 0, 0, 0, 0)].concat()
}

/// `bpf_map_lookup_elem(map, &0)` into r0: the key (0) already on the stack at r10 - 4; the map's
/// address is a 64-bit immediate the loader fills in (the relocation at this code's first byte).
fn lookup_key0() -> Vec<u8> {
    [
        insn(0xbf, 2, 10, 0, 0), // r2 = r10
        insn(0x07, 2, 0, 0, -4), // r2 += -4
        insn(0x18, 1, 0, 0, 0),  // r1 = map (ld_imm64, first half)
        insn(0, 0, 0, 0, 0),     // (second half)
        insn(0x85, 0, 0, 0, 1),  // call bpf_map_lookup_elem
    ]
    .concat()
}

/// The floor: the least a program on the warm path can do that finds a host and counts its
/// packet — one array lookup (a host's slot, read), one per-CPU array lookup (its counters), a
/// count added and the coarse clock stored — then `verdict` (TC "next", -1; `XDP_PASS`, 2). Two
/// relocations: the slot map at the first `lookup_key0`, the counters at the second. Both
/// lookups use key 0: unlike imag's, whose counters are found by the host id read from the slot,
/// the second does not wait for the first's load, so the floor if anything understates what two
/// dependent lookups cost.
fn floor_code(verdict: i32) -> (Vec<u8>, [usize; 2]) {
    const JEQ_R0_0: u8 = 0x15;
    let mut code = insn(0x62, 10, 0, -4, 0).to_vec(); // *(u32 *)(r10 - 4) = 0
    let slots_at = code.len() + 16;
    code.extend(lookup_key0());
    code.extend(insn(JEQ_R0_0, 0, 0, 13, 0)); // if r0 == 0 goto out
    code.extend(insn(0x79, 7, 0, 0, 0)); // r7 = *(u64 *)(r0 + 0): the slot
    let counters_at = code.len() + 16;
    code.extend(lookup_key0());
    code.extend(insn(JEQ_R0_0, 0, 0, 6, 0)); // if r0 == 0 goto out
    code.extend(insn(0xbf, 6, 0, 0, 0)); // r6 = r0
    code.extend(insn(0x79, 1, 6, 0, 0)); // r1 = *(u64 *)(r6 + 0)
    code.extend(insn(0x07, 1, 0, 0, 1)); // r1 += 1
    code.extend(insn(0x7b, 6, 1, 0, 0)); // *(u64 *)(r6 + 0) = r1
    code.extend(insn(0x85, 0, 0, 0, 160)); // call bpf_ktime_get_coarse_ns
    code.extend(insn(0x7b, 6, 0, 8, 0)); // *(u64 *)(r6 + 8) = r0
    code.extend(return_imm(verdict)); // out: r0 = verdict; exit
    (code, [slots_at, counters_at])
}

/// The floor's maps: `bpf_map_def` (type, key size, value size, entries, flags, id, pinning):
/// an array of 4096 eight-byte slots (as `HOST_SLOTS`) and a per-CPU array of 4096 sixteen-byte
/// counters (count and stamp, like a host's `ACTIVITY` entry; `ACTIVITY` has `MAX_HOSTS`).
fn floor_maps() -> [(&'static str, Vec<u8>); 2] {
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
    let def = |kind: u32, value: u32, entries: u32| {
        [kind, 4, value, entries, 0, 0, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    };
    [
        ("floor_slots", def(BPF_MAP_TYPE_ARRAY, 8, 4096)),
        ("floor_counts", def(BPF_MAP_TYPE_PERCPU_ARRAY, 16, 4096)),
    ]
}

fn pad8(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(8) {
        buf.push(0);
    }
}

/// An `Elf64_Shdr` without its (always zero) address: name offset, type, flags, offset, size, link,
/// info, alignment, entry size.
type SectionHeader = (u32, u32, u64, u64, u64, u32, u32, u64, u64);

/// A section that links to no other and holds no table of entries: name offset, type, flags,
/// offset, size, alignment.
fn plain(
    name: u32,
    kind: u32,
    flags: u64,
    offset: usize,
    size: usize,
    align: u64,
) -> SectionHeader {
    (
        name,
        kind,
        flags,
        offset as u64,
        size as u64,
        0,
        0,
        align,
        0,
    )
}

const SHT_PROGBITS: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHT_REL: u32 = 9;
const SHF_WRITE: u64 = 1;
const SHF_ALLOC: u64 = 2;
const SHF_EXECINSTR: u64 = 4;
/// `R_BPF_64_64`: a 64-bit immediate (a map's address) in an `ld_imm64`.
const R_BPF_64_64: u64 = 1;

/// A program of the object: section, symbol, code, relocations (offset in the code, index of
/// the map in [`floor_maps`]).
type ObjectProgram = (&'static str, &'static str, Vec<u8>, Vec<(usize, usize)>);

/// A relocatable eBPF ELF object with three programs: `classifier` (returns -1), `xdp` (returns
/// 2), and the floor (`classifier/floor`: [`floor_code`]) with its maps in a legacy `maps`
/// section, each relocation an `Elf64_Rel` against the map's symbol.
pub fn object() -> Vec<u8> {
    let (floor, relocations) = floor_program(-1);
    build(&[
        ("classifier", TC_NAME, return_imm(-1), Vec::new()),
        ("xdp", XDP_NAME, return_imm(2), Vec::new()),
        ("classifier/floor", FLOOR_NAME, floor, relocations),
    ])
}

/// An object with the floor as an XDP program alone: aya takes an XDP program only from a
/// section named `xdp`, which [`object`]'s no-op has.
pub fn xdp_floor_object() -> Vec<u8> {
    let (floor, relocations) = floor_program(2);
    build(&[("xdp", XDP_FLOOR_NAME, floor, relocations)])
}

/// The floor's code returning `verdict`, with its relocations.
fn floor_program(verdict: i32) -> (Vec<u8>, Vec<(usize, usize)>) {
    let (code, [slots, counts]) = floor_code(verdict);
    (code, vec![(slots, 0), (counts, 1)])
}

/// The object of `programs`, one section each, with the floor's maps.
#[allow(
    clippy::cast_possible_truncation,
    reason = "offsets and sizes within an object of a few hundred bytes"
)]
#[allow(
    clippy::too_many_lines,
    reason = "the object's bytes in the order they lie in the file"
)]
fn build(programs: &[ObjectProgram]) -> Vec<u8> {
    let maps = floor_maps();
    let relocated = programs.iter().filter(|p| !p.3.is_empty()).count();
    // Section indexes: null, the programs, license, maps, one `.rel` per relocated program,
    // then the tables.
    let maps_index = programs.len() + 2;
    let symtab_index = (maps_index + 1 + relocated) as u32;
    let map_symbol = |map: usize| (1 + programs.len() + map) as u64;
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
    // Elf64_Sym: name, info, other, section, value, size.
    let mut symbol =
        |strtab: &mut Vec<u8>, sym: &str, info: u8, section: usize, value: u64, size: u64| {
            symtab.extend_from_slice(&name(strtab, sym).to_le_bytes());
            symtab.extend_from_slice(&[info, 0]);
            symtab.extend_from_slice(&(section as u16).to_le_bytes());
            symtab.extend_from_slice(&value.to_le_bytes());
            symtab.extend_from_slice(&size.to_le_bytes());
        };
    for (section, sym, code, _) in programs {
        let index = sections.len();
        let sh_name = name(&mut shstrtab, section);
        sections.push(plain(
            sh_name,
            SHT_PROGBITS,
            SHF_ALLOC | SHF_EXECINSTR,
            body.len(),
            code.len(),
            8,
        ));
        body.extend_from_slice(code);
        // A global function.
        symbol(&mut strtab, sym, 0x12, index, 0, code.len() as u64);
    }
    let license = name(&mut shstrtab, "license");
    sections.push(plain(
        license,
        SHT_PROGBITS,
        SHF_ALLOC | SHF_WRITE,
        body.len(),
        4,
        1,
    ));
    body.extend_from_slice(b"GPL\0");
    pad8(&mut body);
    let maps_data: Vec<u8> = maps.iter().flat_map(|(_, def)| def.clone()).collect();
    let sh_name = name(&mut shstrtab, "maps");
    sections.push(plain(
        sh_name,
        SHT_PROGBITS,
        SHF_ALLOC | SHF_WRITE,
        body.len(),
        maps_data.len(),
        4,
    ));
    let mut at = 0u64;
    for (map, def) in &maps {
        // A global object in the maps section.
        symbol(&mut strtab, map, 0x11, maps_index, at, def.len() as u64);
        at += def.len() as u64;
    }
    body.extend_from_slice(&maps_data);
    pad8(&mut body);
    for (index, (section, _, _, relocations)) in programs.iter().enumerate() {
        if relocations.is_empty() {
            continue;
        }
        // Elf64_Rel: offset, info (symbol << 32 | type).
        let rel: Vec<u8> = relocations
            .iter()
            .flat_map(|(offset, map)| {
                let mut entry = (*offset as u64).to_le_bytes().to_vec();
                entry.extend_from_slice(&(map_symbol(*map) << 32 | R_BPF_64_64).to_le_bytes());
                entry
            })
            .collect();
        let sh_name = name(&mut shstrtab, &format!(".rel{section}"));
        sections.push((
            sh_name,
            SHT_REL,
            0,
            body.len() as u64,
            rel.len() as u64,
            symtab_index,
            (index + 1) as u32,
            8,
            16,
        ));
        body.extend_from_slice(&rel);
    }
    debug_assert_eq!(sections.len() as u32, symtab_index);
    let sh_name = name(&mut shstrtab, ".symtab");
    sections.push((
        sh_name,
        SHT_SYMTAB,
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
    sections.push(plain(sh_name, SHT_STRTAB, 0, body.len(), strtab.len(), 1));
    body.extend_from_slice(&strtab);
    let shstrndx = sections.len() as u16;
    let sh_name = name(&mut shstrtab, ".shstrtab");
    // Its own name is in it, so its size is known only now.
    sections.push(plain(sh_name, SHT_STRTAB, 0, body.len(), shstrtab.len(), 1));
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

/// The TC no-op attached to one interface of the calling thread's network namespace (on its
/// egress, TCX), and the XDP baselines on the same interface's ingress (generic mode, the no-op
/// first). Dropping it detaches them.
pub struct Noops {
    /// The TC no-op's object, held for its link (dropping it detaches the no-op).
    _tc: Ebpf,
    pub xdp: XdpBaselines,
    pub tc_id: u32,
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
        let mut xdp = XdpBaselines::load(vec![iface.to_string()])?;
        xdp.use_xdp(XDP_NAME)?;
        Ok(Noops {
            _tc: ebpf,
            xdp,
            tc_id,
        })
    }
}

/// The XDP no-op and the XDP floor, loaded, and one of them attached (generic mode) to each of
/// some interfaces: an interface has one XDP program, so the two take turns
/// ([`XdpBaselines::use_xdp`]). Attach and swap from a thread in the interfaces' network
/// namespace. Dropping it detaches them.
pub struct XdpBaselines {
    /// The no-op's object ([`object`]) and the floor's ([`xdp_floor_object`]).
    noop: Ebpf,
    floor: Ebpf,
    ifaces: Vec<String>,
    /// The program attached now, and its links (none before the first swap, or after a failed
    /// one).
    attached: Option<(&'static str, Vec<XdpLinkId>)>,
    pub noop_id: u32,
    pub floor_id: u32,
}

impl XdpBaselines {
    /// Both programs loaded for `ifaces`, neither attached yet.
    pub fn load(ifaces: Vec<String>) -> anyhow::Result<XdpBaselines> {
        use anyhow::Context as _;
        let mut noop = Ebpf::load(&object()).context("loading the XDP no-op")?;
        let mut floor = Ebpf::load(&xdp_floor_object()).context("loading the XDP floor")?;
        let mut ids = [0; 2];
        for (at, (object, name)) in [(&mut noop, XDP_NAME), (&mut floor, XDP_FLOOR_NAME)]
            .into_iter()
            .enumerate()
        {
            let xdp = xdp_program(object, name)?;
            xdp.load().with_context(|| format!("loading {name}"))?;
            ids[at] = xdp.info()?.id();
        }
        Ok(XdpBaselines {
            noop,
            floor,
            ifaces,
            attached: None,
            noop_id: ids[0],
            floor_id: ids[1],
        })
    }

    /// Puts XDP program `name` (the no-op or the floor) on every interface in place of the one
    /// there; returns its id.
    pub fn use_xdp(&mut self, name: &'static str) -> anyhow::Result<u32> {
        use anyhow::Context as _;
        let id = if name == XDP_FLOOR_NAME {
            self.floor_id
        } else {
            self.noop_id
        };
        if let Some((attached, _)) = &self.attached
            && *attached == name
        {
            return Ok(id);
        }
        let ifaces = self.ifaces.clone();
        if let Some((attached, links)) = self.attached.take() {
            for (link, iface) in links.into_iter().zip(&ifaces) {
                xdp_program(self.object_of(attached), attached)?
                    .detach(link)
                    .with_context(|| format!("detaching {attached} from {iface}"))?;
            }
        }
        let mut links = Vec::new();
        for iface in &ifaces {
            let link = xdp_program(self.object_of(name), name)?
                .attach(iface, XdpMode::Skb)
                .with_context(|| format!("attaching {name} to {iface} (generic mode)"))?;
            links.push(link);
        }
        self.attached = Some((name, links));
        Ok(id)
    }

    fn object_of(&mut self, program: &str) -> &mut Ebpf {
        if program == XDP_FLOOR_NAME {
            &mut self.floor
        } else {
            &mut self.noop
        }
    }
}

/// An XDP program of a loaded [`object`] by name.
fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Xdp> {
    use anyhow::Context as _;
    Ok(ebpf
        .program_mut(name)
        .with_context(|| format!("no {name} in the object"))?
        .try_into()?)
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

/// One TC no-op and one floor per imag TC program, attached first (TCX order) on each hook that
/// program runs on, found from the agent's pins in `pin_dir`. Dropping it detaches them.
pub struct BesideImag {
    /// One loaded object per imag program (dropping one detaches its links).
    loaded: Vec<Ebpf>,
    /// (imag program, the id of the no-op beside it).
    pub ids: Vec<(&'static str, u32)>,
    /// (imag program, the id of the floor beside it).
    pub floors: Vec<(&'static str, u32)>,
}

impl BesideImag {
    pub fn attach(pin_dir: &Path) -> anyhow::Result<BesideImag> {
        use anyhow::Context as _;
        let hooks = imag_tc_hooks(pin_dir)?;
        let mut beside = BesideImag {
            loaded: Vec::new(),
            ids: Vec::new(),
            floors: Vec::new(),
        };
        for (program, index, attach) in hooks {
            let slot = if let Some(slot) = beside.ids.iter().position(|(p, _)| *p == program) {
                slot
            } else {
                let mut ebpf = Ebpf::load(&object()).context("loading a no-op and a floor")?;
                let mut ids = [0; 2];
                for (at, name) in [TC_NAME, FLOOR_NAME].into_iter().enumerate() {
                    let tc = tc_program(&mut ebpf, name)?;
                    tc.load().with_context(|| format!("loading {name}"))?;
                    ids[at] = tc.info()?.id();
                }
                beside.loaded.push(ebpf);
                beside.ids.push((program, ids[0]));
                beside.floors.push((program, ids[1]));
                beside.ids.len() - 1
            };
            let iface = interface_name(index)
                .with_context(|| format!("the interface of {program}'s hook (ifindex {index})"))?;
            for name in [FLOOR_NAME, TC_NAME] {
                tc_program(&mut beside.loaded[slot], name)?
                    .attach_with_options(
                        &iface,
                        attach,
                        TcAttachOptions::TcxOrder(LinkOrder::first()),
                    )
                    .with_context(|| format!("attaching {name} before {program} on {iface}"))?;
            }
        }
        Ok(beside)
    }
}

/// The TC no-op in a loaded [`object`].
fn tc_noop(ebpf: &mut Ebpf) -> anyhow::Result<&mut SchedClassifier> {
    tc_program(ebpf, TC_NAME)
}

/// A TC program of a loaded [`object`] by name.
fn tc_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut SchedClassifier> {
    use anyhow::Context as _;
    Ok(ebpf
        .program_mut(name)
        .with_context(|| format!("no {name} in the object"))?
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

/// Every imag TC hook, from the agent's pins in `pin_dir` ([`imag_tc_hook`]), by program and
/// ifindex.
fn imag_tc_hooks(pin_dir: &Path) -> anyhow::Result<Vec<(&'static str, u32, TcAttachType)>> {
    use anyhow::Context as _;
    let mut hooks: Vec<(&'static str, u32, TcAttachType)> = std::fs::read_dir(pin_dir)
        .with_context(|| format!("reading the agent's pins in {}", pin_dir.display()))?
        .flatten()
        .filter_map(|e| imag_tc_hook(&e.file_name().to_string_lossy()))
        .collect();
    hooks.sort_by_key(|(program, index, _)| (*program, *index));
    Ok(hooks)
}

/// The interfaces the holding program is hooked on by TC, from the agent's pins in `pin_dir`
/// (`link-tc-<ifindex>`): where, with the holding program hooked by XDP instead, `imag_hold`
/// runs on the same packets.
pub fn holding_interfaces(pin_dir: &Path) -> anyhow::Result<Vec<String>> {
    (imag_tc_hooks(pin_dir)?.into_iter())
        .filter(|(program, _, _)| *program == "imag_hold_tc")
        .map(|(_, index, _)| interface_name(index))
        .collect()
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
    fn the_objects_hold_the_programs_and_the_kernel_accepts_the_floors() {
        // Loading creates the floor's maps (the relocations name them) and has the verifier
        // check the floors: as root, as the bench runs.
        let mut ebpf = aya::Ebpf::load(&super::object()).expect("the object loads");
        let mut names: Vec<&str> = ebpf.programs().map(|(name, _)| name).collect();
        names.sort_unstable();
        assert_eq!(names, [super::FLOOR_NAME, super::TC_NAME, super::XDP_NAME]);
        let mut maps: Vec<&str> = ebpf.maps().map(|(name, _)| name).collect();
        maps.sort_unstable();
        assert_eq!(maps, ["floor_counts", "floor_slots"]);
        super::tc_program(&mut ebpf, super::FLOOR_NAME)
            .expect("a classifier")
            .load()
            .expect("the verifier accepts the floor");
        let mut xdp = aya::Ebpf::load(&super::xdp_floor_object()).expect("the XDP floor loads");
        super::xdp_program(&mut xdp, super::XDP_FLOOR_NAME)
            .expect("an XDP program")
            .load()
            .expect("the verifier accepts the XDP floor");
    }
}
